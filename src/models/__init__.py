"""Recurrent cells and the stack that layers them."""
