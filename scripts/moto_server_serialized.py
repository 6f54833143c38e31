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

Leaks are closed as well, because a leaking server stalls for seconds on every full garbage
collection and turned timing margins in the tests into failures (9 GB after an hour of tests):
- moto keeps every model object it ever made in a class-level list (for its model-listing
  API, unused here): every item version, every table copy and every stream iterator stayed in
  memory. This server does not track them.
- TransactWriteItems copies each table it touches, stream records included, and a failed one
  puts the copy back. Iterators handed out before then went on reading the discarded copy,
  which still held the stream records of the cancelled writes. The copy now shares the live
  stream shard, which a failed transaction cuts back to its length before: a cancelled
  transaction leaves no stream records and every iterator reads on, as in DynamoDB.
- Every GetShardIterator and GetRecords stores a new iterator. DynamoDB expires an iterator
  15 minutes after it is handed out; so does this server.
"""

import collections
import copy
import functools
import sys
import threading
import time

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodbstreams.models import DynamoDBStreamsBackend
from moto.core.common_models import BaseModel
from moto.core.exceptions import JsonRESTError
from moto.dynamodb.models.table import StreamShard
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


def _untracked_new(cls, *args, **kwargs):
    return object.__new__(cls)


BaseModel.__new__ = staticmethod(_untracked_new)

# DynamoDB Streams: a shard iterator expires 15 minutes after it is handed out.
_ITERATOR_TTL_SECONDS = 15 * 60
_ITERATORS_BORN: collections.deque = collections.deque()


def _expire_iterators(backend, now):
    while _ITERATORS_BORN and _ITERATORS_BORN[0][0] < now - _ITERATOR_TTL_SECONDS:
        _, arn = _ITERATORS_BORN.popleft()
        backend.shard_iterators.pop(arn, None)


# True during TransactWriteItems: its backup of a table shares the live stream shard rather
# than copying every stream record of the table on every transaction.
_SHARING_SHARDS = [False]


def _shard_deepcopy(self, memo):
    if _SHARING_SHARDS[0]:
        return self
    new = self.__class__.__new__(self.__class__)
    memo[id(self)] = new
    new.__dict__.update(copy.deepcopy(self.__dict__, memo))
    return new


StreamShard.__deepcopy__ = _shard_deepcopy


def _restore_stream_shards(transact_write_items):
    @functools.wraps(transact_write_items)
    def keeping_shards(self, transact_items, *args, **kwargs):
        before = {}
        for item in transact_items:
            _, op = next(iter(item.items()))
            table = self.tables.get(op.get("TableName"))
            if table is not None and table.stream_shard is not None:
                before[table.name] = (table, table.stream_shard, len(table.stream_shard.items))
        _SHARING_SHARDS[0] = True
        try:
            return transact_write_items(self, transact_items, *args, **kwargs)
        except Exception:
            for name, (original, shard, length) in before.items():
                restored = self.tables.get(name)
                if restored is not None and restored is not original:
                    del shard.items[length:]
                    shard.table = restored
                    restored.stream_shard = shard
            raise
        finally:
            _SHARING_SHARDS[0] = False

    return keeping_shards


def _expiring_get_shard_iterator(get_shard_iterator):
    @functools.wraps(get_shard_iterator)
    def expiring(self, *args, **kwargs):
        now = time.monotonic()
        _expire_iterators(self, now)
        iterator = get_shard_iterator(self, *args, **kwargs)
        _ITERATORS_BORN.append((now, iterator.arn))
        return iterator

    return expiring


def _expiring_get_records(get_records):
    @functools.wraps(get_records)
    def expiring(self, iterator_arn, *args, **kwargs):
        now = time.monotonic()
        _expire_iterators(self, now)
        if iterator_arn not in self.shard_iterators:
            raise JsonRESTError(
                "ExpiredIteratorException", "Iterator expired or not issued by this server"
            )
        result = get_records(self, iterator_arn, *args, **kwargs)
        _ITERATORS_BORN.append((now, result["NextShardIterator"]))
        return result

    return expiring


DynamoDBBackend.transact_write_items = _restore_stream_shards(
    DynamoDBBackend.transact_write_items
)
DynamoDBStreamsBackend.get_shard_iterator = _expiring_get_shard_iterator(
    DynamoDBStreamsBackend.get_shard_iterator
)
DynamoDBStreamsBackend.get_records = _expiring_get_records(DynamoDBStreamsBackend.get_records)

_serialize(DynamoDBBackend, _LOCK)
_serialize(DynamoDBStreamsBackend, _LOCK)
_serialize(SQSBackend, _SQS_QUEUES, _SQS_QUEUE_CALLS)

if __name__ == "__main__":
    from moto.server import main

    sys.argv[0] = "moto_server"
    sys.exit(main())
