"""The checkpoint doctor: what a checkpoint file holds, read safely in a child process, and why it
does or does not load into a module (a lab preset or a real architecture), cause by cause."""
