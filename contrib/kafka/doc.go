// Package kafka delivers vinequeue batches to Apache Kafka with franz-go.
//
// A Producer owns one franz-go client configured for delivery that a queue can
// retry safely: acks from all in-sync replicas, the idempotent producer, and a
// partitioner that is deterministic by key (Kafka's own murmur2 hashing, as
// kgo.StickyKeyPartitioner(nil) does). Its send functions produce a whole
// batch and return only once the broker acknowledged every record of it, or
// with an error naming how many were not.
//
// # Errors
//
// The queue retries every error of a SendFunc, up to Config.Retry.MaxAttempts,
// and then hands the batch to OnDrop. This package sorts failures into two
// kinds so that a caller can tell them apart in OnDrop's reason or a log:
//
//   - retryable: timeouts, retries exhausted inside the client, cancelled
//     contexts, network errors, and Kafka error codes Kafka marks retriable
//     (NOT_LEADER_FOR_PARTITION, REQUEST_TIMED_OUT, ...). A later attempt can succeed.
//   - fatal: encoding errors, a closed Producer, and Kafka error codes Kafka
//     marks non-retriable (MESSAGE_TOO_LARGE, TOPIC_AUTHORIZATION_FAILED,
//     INVALID_RECORD, ...). These errors wrap ErrFatal: errors.Is(err,
//     ErrFatal), or IsFatal(err), reports them. Retrying them cannot succeed;
//     keep Config.Retry.MaxAttempts low if they are expected, or drop the
//     offending records before they reach the queue.
//
// The underlying franz-go error is wrapped too, so errors.Is(err,
// kerr.MessageTooLarge) and errors.Is(err, kgo.ErrRecordTimeout) work.
//
// # Order and duplicates
//
// Records with the same key go to the same partition, and a queue delivers
// the batches of one key (EnqueueKey) one at a time, in order; each send
// waits for every ack of its batch before returning. Together that keeps the
// per-key order from EnqueueKey to the partition. Use the same key on both
// sides: QueueKey(recordKey) as the queue key.
//
// Delivery is at least once. The idempotent producer removes the duplicates
// of its own internal retries, but when a send fails part way (some records
// acknowledged, others not) and the queue retries the batch, the acknowledged
// records are produced again. A consumer sees each key's records in order,
// where a retry may repeat a run of records already seen before the new ones
// continue (check it as "each record is either the next one or one already
// seen").
//
// Why order survives a partial failure: a record is acknowledged behind a
// failed one of its send only if it entered the client after franz-go gave
// up on the earlier one, since giving up fails every record then buffered
// for the partition. The Producer buffers a whole batch without ever
// blocking (it reserves room first) and without a flush in between, and
// with client retries unbounded (kgo.RecordRetries is not exposed) franz-go
// gives up on a retriable error only after DeliveryTimeout, at least 1s
// after the request went out, which is far longer than buffering a batch
// takes. When the context ends, the records that fail are those not yet
// sent, which come after those already sent; records refused with a
// non-retriable error are fatal and never delivered.
//
// # Cancellation
//
// A send returns only when the client is done with every record of its
// batch, since the records point into the caller's items. When the send's
// context ends, records not yet sent fail at once (retryable), but records
// whose produce request may already have been written are not given up on:
// the idempotent producer must learn their fate to keep its sequence
// numbers, so it retries them until the broker answers (a broker that
// accepts connections and never answers keeps the send, and so the queue's
// Stop, waiting). Such records may end up acknowledged, and the send then
// returns nil.
//
// # Concurrency
//
// A Producer is safe for concurrent use: a queue with several Workers calls
// its send functions from several goroutines. Close it after the queue's Stop
// has returned.
package kafka
