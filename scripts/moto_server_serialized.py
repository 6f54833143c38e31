"""The local AWS server (moto), with DynamoDB and DynamoDB Streams calls serialized.

Why: moto's TransactWriteItems takes a copy of the whole table before it starts and, when any
item's condition fails, puts that copy back. With moto's threaded server, a transaction that
fails while another one succeeds therefore erases the other one's writes (and their stream
records): concurrent conditional writes, which DynamoDB makes linearizable, lose updates. One
lock around every DynamoDB and Streams backend call gives the local server DynamoDB's
guarantee. SQS messages stay concurrent (its long polls must not block the table), but the calls
that change or list the set of queues share a second lock: moto's CreateQueue walks every queue
to find a redrive target while another thread adds one, and fails with "dictionary changed size
during iteration" when parallel tests create their queues at once.
"""

import functools
import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodbstreams.models import DynamoDBStreamsBackend
from moto.sqs.models import SQSBackend

_LOCK = threading.RLock()
_SQS_QUEUES = threading.RLock()
_SQS_QUEUE_CALLS = (
    "create_queue",
    "delete_queue",
    "set_queue_attributes",
    "list_queues",
    "get_queue_url",
    "get_queue_attributes",
    "list_dead_letter_source_queues",
)


def _serialize(cls, lock, names=None):
    for name in names or dir(cls):
        if name.startswith("_"):
            continue
        attr = getattr(cls, name, None)
        if not callable(attr) or isinstance(attr, type):
            continue

        def wrap(fn):
            @functools.wraps(fn)
            def locked(*args, **kwargs):
                with lock:
                    return fn(*args, **kwargs)

            return locked

        setattr(cls, name, wrap(attr))


_serialize(DynamoDBBackend, _LOCK)
_serialize(DynamoDBStreamsBackend, _LOCK)
_serialize(SQSBackend, _SQS_QUEUES, _SQS_QUEUE_CALLS)

if __name__ == "__main__":
    from moto.server import main

    sys.argv[0] = "moto_server"
    sys.exit(main())
