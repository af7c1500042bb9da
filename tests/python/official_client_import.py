"""Sends events to a Mixpanel-compatible receiver with Mixpanel's official Python library.

Usage: python official_client_import.py BASE_URL USERNAME SECRET PROJECT_ID

The receiver must treat these requests exactly as Mixpanel would; the Rust test
(tests/official_client.rs) checks what it stored. Exits non-zero if the library reports an error.
"""
import sys
import time

from mixpanel import BufferedConsumer, Consumer, Mixpanel, ServiceAccountCredentials

base, username, secret, project_id = sys.argv[1:5]
creds = ServiceAccountCredentials(username=username, secret=secret, project_id=project_id)
now = int(time.time()) - 3600

# One event per request (form-encoded `data=<object>`, verbose=1).
mp = Mixpanel("project-token", consumer=Consumer(import_url=f"{base}/import", credentials=creds, retry_limit=0))
for i in range(3):
    mp.import_data(None, f"user-{i}", "Official Single", now + i, {"n": i, "unicode": "Zürich 東京"})

# Batches (form-encoded `data=<array>`).
buffered = BufferedConsumer(max_size=4, import_url=f"{base}/import", credentials=creds, retry_limit=0)
mp = Mixpanel("project-token", consumer=buffered)
for i in range(10):
    mp.import_data(None, f"user-{i}", "Official Batch", now + i, {"n": i})
buffered.flush()

print("ok")
