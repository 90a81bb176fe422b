"""The app under development in examples/dev-hot-reload.yaml: edit GREETING (or anything)
and the container serving it reloads; every visit is a row in PostgreSQL on the db VM."""

import os

import psycopg2
from flask import Flask

GREETING = "hello from version 1"

app = Flask(__name__)


@app.get("/")
def index():
    conn = psycopg2.connect(host=os.environ.get("DB_HOST", "db"), dbname="postgres",
                            user="postgres", connect_timeout=3)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO items (source, body) VALUES ('dev', %s) RETURNING id",
                        (GREETING,))
            (visit,) = cur.fetchone()
    finally:
        conn.close()
    return f"{GREETING} (visit {visit})\n"
