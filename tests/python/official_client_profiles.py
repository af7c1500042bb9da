"""Sends user and group profile updates to a Mixpanel-compatible receiver with Mixpanel's
official Python library.

Usage: python official_client_profiles.py BASE_URL PROJECT_TOKEN

The library posts form-encoded `data=<json>&verbose=1&ip=0` to /engage and /groups and fails
unless the answer is `{"status": 1, ...}`. The Rust test (tests/official_client.rs) checks the
profiles the receiver holds afterwards. Exits non-zero if the library reports an error.
"""
import sys

from mixpanel import BufferedConsumer, Consumer, Mixpanel

base, token = sys.argv[1:3]
urls = {"people_url": f"{base}/engage", "groups_url": f"{base}/groups", "retry_limit": 0}

# One update per request.
mp = Mixpanel(token, consumer=Consumer(**urls))
mp.people_set("user-1", {"plan": "pro", "city": "Zürich 東京"}, meta={"$ignore_time": True})
mp.people_set_once("user-1", {"plan": "free", "first": "2024-01-01"}, meta={"$ignore_time": True})
mp.people_unset("user-1", ["city"], meta={"$ignore_time": True})
mp.people_set("user-2", {"plan": "free"})
mp.people_delete("user-2")
mp.group_set("company", "acme", {"name": "Acme", "size": 12})
mp.group_unset("company", "acme", ["size"])

# Batches (form-encoded `data=<array>`).
buffered = BufferedConsumer(max_size=3, **urls)
mp = Mixpanel(token, consumer=buffered)
for i in range(5):
    mp.people_set(f"batch-{i}", {"i": i})
buffered.flush()

print("ok")
