"""What built the ``imagegen-shapes`` demo model, kept beside the runtime package (never imported by it).

``world`` renders the procedural shapes scenes and their captions, ``analyse`` scores an image against a prompt with
rules, ``train`` trains the model from scratch, ``evaluate`` scores a model through :class:`imagegen.Engine`. The CLI
reaches them only through ``imagegen train-demo`` and ``imagegen eval-demo``.
"""
