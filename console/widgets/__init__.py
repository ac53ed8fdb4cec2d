"""The console's widgets and the cell formatting they share."""
