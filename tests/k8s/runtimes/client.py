"""A Python app as it runs in an injected pod: urllib with no proxy or trust code of its own
(SSL_CERT_FILE, and HTTPS_PROXY/NO_PROXY in explicit mode). Prints {"urllib <url>": status | "error: ..."}."""

import json
import sys
import urllib.error
import urllib.request

out = {}
for url in sys.argv[1:]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            out[f"urllib {url}"] = resp.status
    except urllib.error.HTTPError as exc:
        out[f"urllib {url}"] = exc.code
    except Exception as exc:  # the test reads the failure
        out[f"urllib {url}"] = f"error: {exc!r}"
print(json.dumps(out))
