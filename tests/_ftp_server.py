"""A local FTP server for the BIND tests: serves DIR read-only to anonymous on 127.0.0.1:PORT
(0 picks one), prints "PORT n" once listening, runs until killed or for at most LIFETIME s."""
import sys
import threading

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

directory, port, lifetime = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
authorizer = DummyAuthorizer()
authorizer.add_anonymous(directory)
handler = FTPHandler
handler.authorizer = authorizer
# Active mode only to the control connection's peer (pyftpdlib's default), which is the proxy here.
handler.permit_foreign_addresses = False
server = FTPServer(("127.0.0.1", port), handler)
print("PORT", server.address[1], flush=True)
threading.Timer(lifetime, server.close_all).start()
server.serve_forever(timeout=0.5, handle_exit=False)
