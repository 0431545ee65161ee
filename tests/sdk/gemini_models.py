"""The google-genai SDK's model listing through rotor, with the SDK's default api_version (v1)
and with v1beta: models.list() and models.get() must name the models rotor routes.

Usage: python3 tests/sdk/gemini_models.py BASE_URL CLIENT_KEY MODEL [MODEL...]
(BASE_URL without a version, e.g. http://127.0.0.1:8080). Exits non-zero on a mismatch.
"""

import sys

from google import genai
from google.genai import types


def main() -> int:
    base, key, *models = sys.argv[1:]
    expected = sorted(f"models/{m}" for m in models)
    failures = []
    for version in (None, "v1", "v1beta"):
        options = types.HttpOptions(base_url=base, api_version=version) if version else types.HttpOptions(base_url=base)
        client = genai.Client(api_key=key, http_options=options)
        label = version or "default"
        names = sorted(m.name for m in client.models.list())
        if not set(expected) <= set(names):
            failures.append(f"{label}: models.list() gave {names}, expected at least {expected}")
        one = client.models.get(model=models[0])
        if one.name != f"models/{models[0]}":
            failures.append(f"{label}: models.get({models[0]!r}) gave {one.name!r}")
        print(f"{label}: models.list() -> {names}; models.get -> {one.name}")
    for f in failures:
        print("FAIL", f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
