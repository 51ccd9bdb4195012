"""A real Flask app for the framework tests."""

import hashlib

from flask import Flask, Response, jsonify, request

app = Flask(__name__)
application = app


@app.get("/")
def index():
    return "hello from flask"


@app.post("/json")
def post_json():
    data = request.get_json()
    return jsonify(received=data, total=sum(data["numbers"]))


@app.post("/form")
def post_form():
    return jsonify(fields=request.form.to_dict(flat=False))


@app.post("/upload")
def upload():
    f = request.files["file"]
    data = f.read()
    return jsonify(size=len(data), sha256=hashlib.sha256(data).hexdigest(), name=f.filename,
                   note=request.form.get("note"))


@app.post("/raw")
def raw():
    data = request.get_data()
    return jsonify(size=len(data), sha256=hashlib.sha256(data).hexdigest())


@app.get("/stream")
def stream():
    def gen():
        for i in range(20):
            yield f"line {i}\n"
    return Response(gen(), mimetype="text/plain")


@app.get("/boom")
def boom():
    raise RuntimeError("flask-boom-marker")
