"""Evidence scripts: standalone comparisons whose JSON outputs under ``results/`` back the READMEs."""
