"""The request pipeline, in the one place its order is written (DESIGN.md §2)."""
