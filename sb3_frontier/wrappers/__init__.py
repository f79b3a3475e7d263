"""Environment-side wrappers and value transforms, usable in any SB3 project without our algorithms."""
