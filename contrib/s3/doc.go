// Package s3 delivers vinequeue batches to S3-compatible object storage with
// minio-go: each batch becomes one object of newline-delimited items,
// optionally gzip-compressed.
//
// # Names: a retry overwrites, it does not duplicate
//
// An object is named after its content: Config.Prefix, the hex SHA-256 of the
// uncompressed payload, and ".ndjson" (".ndjson.gz" with Gzip). A batch that
// the queue retries (after a timeout that hid a successful upload, say) has
// the same content, so it is written under the same name and replaces the
// object instead of adding a second copy. The flip side: two batches with
// byte-identical content are one object. Items that are distinct events
// usually differ (an id, a timestamp); if identical batches are meaningful
// in your data, give items a unique id.
//
// # Errors
//
// minio-go retries transient failures itself (Options.MaxRetries, default 10);
// what is left reaches the queue, which retries every error up to its
// Config.Retry.MaxAttempts and then hands the batch to OnDrop. Errors that
// retrying cannot fix wrap ErrFatal (errors.Is(err, ErrFatal), IsFatal(err)):
// an item containing a newline, an encoding error, and S3 answers with a
// 4xx status other than 408 and 429 (AccessDenied, NoSuchBucket,
// InvalidBucketName, ...). Everything else (5xx, SlowDown, network errors,
// cancelled contexts) is retryable.
//
// # Concurrency
//
// A Writer is safe for concurrent use by a queue's Workers. It keeps nothing
// of a batch after its send returns.
package s3
