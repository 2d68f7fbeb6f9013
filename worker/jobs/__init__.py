"""Jobs: the queue port, putting work in the queue with its custody event, and finding lost jobs."""
