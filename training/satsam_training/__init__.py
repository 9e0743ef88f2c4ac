"""satsam_training: builds training data for satsam_ros and fine-tunes SAM."""

__version__ = "0.1.0"
