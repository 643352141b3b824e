"""The registration lab: a spec (preset, member styles, device) built into a live nn.Module and read
back through torch's own tables, its experiments, its matrix and the script that reproduces it."""
