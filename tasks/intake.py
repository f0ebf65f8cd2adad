"""Tasks of this module are added by the issue that builds them."""
