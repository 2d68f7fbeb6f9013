"""The hostile-filesystem kit: directories held open, owner-only modes, free space, open writers, work folders."""
