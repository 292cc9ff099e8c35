"""The built-in demo model: its shipped weights (``weights/``) and the ``imagegen demo`` gallery."""
