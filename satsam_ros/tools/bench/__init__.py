"""The benchmark behind `satsam bench`: how fast the Detector and the live node are, and why."""
