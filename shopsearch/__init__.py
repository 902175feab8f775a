"""shopsearch: semantic, filtered, hybrid product search for online shops."""

__version__ = "0.1.0"
