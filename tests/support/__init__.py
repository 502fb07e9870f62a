"""What the tests share: servers, the scripted engine, raw sockets, images, /proc, fuzzing budgets."""
import os

SUPPORT = os.path.dirname(os.path.abspath(__file__))  # also the scripts run as servers (*_main.py)
