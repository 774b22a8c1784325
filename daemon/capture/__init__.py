"""Live capture (docs/capture.md): a kiosk's camera stream in, guidance out, the photos taken when right.

  tracker.py    the fast live path: one landmark pass per frame on an ROI tracked from the last landmarks
  guide.py      what keeps a view from being captured (message codes) and the hold timer
  texts.py      the guide's texts, English and Korean
  session.py    one session's state: frames (newest wins), views, captures, the final request
  manager.py    the sessions of every transport, their limit, the worker and the final analysis
  websocket.py  GET /capture (Starlette)
  mqtt.py       capture/<kiosk>/<uuid>/... topics (paho)

The posture domain (daemon/pose.py, guidance.py, ...) stays free of transports; only the last two files
know one.
"""
