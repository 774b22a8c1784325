"""A fleet of daemons behind one broker (issue 13): the kiosk's side of the MQTT contract, the retained
status each daemon publishes and the `skeletond fleet` view built from it.

The broker spreads the work (an MQTT 5 shared subscription); nothing here schedules. See docs/fleet.md.
"""
