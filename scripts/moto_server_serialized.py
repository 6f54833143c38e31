"""The local AWS server (moto), with DynamoDB and DynamoDB Streams calls serialized.

Why: moto's TransactWriteItems takes a copy of the whole table before it starts and, when any
item's condition fails, puts that copy back. With moto's threaded server, a transaction that
fails while another one succeeds therefore erases the other one's writes (and their stream
records): concurrent conditional writes, which DynamoDB makes linearizable, lose updates. One
lock around every DynamoDB and Streams backend call gives the local server DynamoDB's
guarantee. SQS is left concurrent (its long polls must not block the table).
"""

import functools
import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodbstreams.models import DynamoDBStreamsBackend

_LOCK = threading.RLock()


def _serialize(cls):
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attr = getattr(cls, name, None)
        if not callable(attr) or isinstance(attr, type):
            continue

        def wrap(fn):
            @functools.wraps(fn)
            def locked(*args, **kwargs):
                with _LOCK:
                    return fn(*args, **kwargs)

            return locked

        setattr(cls, name, wrap(attr))


_serialize(DynamoDBBackend)
_serialize(DynamoDBStreamsBackend)

if __name__ == "__main__":
    from moto.server import main

    sys.argv[0] = "moto_server"
    sys.exit(main())
