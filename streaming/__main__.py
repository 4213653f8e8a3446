from streaming.cli import app

app()
