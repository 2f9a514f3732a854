"""The master's brain: a pure, deterministic state machine.

Nothing here imports ``grpc``, ``socket``, ``threading``, ``asyncio`` or
``time`` (a test enforces it): time arrives as ``now`` in every event, and
every decision comes out as an action for the shell to carry out.  The same
events in the same order always give the same state and actions, so a later
master can persist and replicate the events to survive its own crash.
"""
