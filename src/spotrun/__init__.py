"""spotrun: managed spot training.

Submit a training job with one switch and spotrun runs it on preemptible capacity,
survives every interruption by checkpointing and resuming, never waits longer than the
job's max-wait, and reports what the job cost and what it saved.
"""

__version__ = "0.1.0"
