"""resize-server: on-demand image thumbnails for S3 static websites."""

__version__ = "0.1.0"
