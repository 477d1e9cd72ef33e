"""Parses Prometheus text exposition from stdin with the reference parser (prometheus_client)
and prints one sample per line: name, labels as JSON, value. Exits 1 on a parse error."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
try:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = json.dumps(sample.labels, sort_keys=True)
            print(f"{sample.name}\t{labels}\t{sample.value}")
except Exception as error:  # the parser raises ValueError and friends
    print(f"unparsable exposition: {error}", file=sys.stderr)
    sys.exit(1)
