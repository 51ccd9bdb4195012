"""A Flask app with one JSON endpoint (scenario flask); every path answers the same JSON."""

from flask import Flask, jsonify

app = Flask(__name__)

ITEMS = [{"id": i, "name": f"item {i}", "price": i * 1.25, "tags": ["a", "b"]} for i in range(20)]


@app.route("/", defaults={"path": ""})
@app.route("/<path:path>")
def items(path):
    return jsonify(count=len(ITEMS), items=ITEMS)


application = app
