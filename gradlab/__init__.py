"""gradlab."""
