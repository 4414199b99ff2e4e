"""medtasks: one toolkit, one CLI, every medical-imaging task of the source reports, built on MONAI."""

__version__ = "0.1.0"
