"""Figures drawn from models and masks (Grad-CAM, overlays); the report module renders run files."""
