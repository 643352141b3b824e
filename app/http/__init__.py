"""The HTTP edge: how requests reach the app and answers leave it (the server protocol, the response
cache, the caps on what a request may hold, HEAD, security headers). It knows no feature."""
