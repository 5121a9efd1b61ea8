package s3

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/minio/minio-go/v7"
	"github.com/vineroute/vinequeue"
)

// ErrFatal marks a send error that retrying cannot fix: see the package
// documentation for which errors are fatal. Such errors are also wrapped in
// vinequeue.Permanent, so the queue sends the batch to OnDrop at once instead
// of re-sending it (and duplicating its good records) MaxAttempts times.
var ErrFatal = errors.New("s3: fatal upload error")

// IsFatal reports whether err, returned by a send function of this package,
// is one that retrying cannot fix. It is errors.Is(err, ErrFatal).
func IsFatal(err error) bool { return errors.Is(err, ErrFatal) }

// Config configures a Writer.
type Config struct {
	// Client is the S3 client to upload with. Required.
	Client *minio.Client
	// Bucket receives the objects; it must exist. Required.
	Bucket string
	// Prefix starts every object name, e.g. "events/". Optional.
	Prefix string
	// Gzip compresses each object (gzip, compress/gzip's default level); the
	// name then ends in ".gz" and the content type is application/gzip.
	Gzip bool
	// ObjectName, when set, replaces the default naming (Prefix + hex
	// SHA-256 + extension). It receives the SHA-256 of the uncompressed
	// payload and must be a pure function of it, or retries duplicate
	// objects instead of overwriting them.
	ObjectName func(sum [sha256.Size]byte) string
}

// Writer uploads queue batches as objects. Create it with New; it is safe
// for concurrent use. Each object goes up in a single PUT (no multipart
// upload, so it appears whole or not at all): a batch must encode to less
// than the store's single-PUT limit (5 GiB on AWS S3); size the queue's
// MaxBatchSize accordingly.
type Writer struct {
	client     *minio.Client
	bucket     string
	prefix     string
	gzip       bool
	objectName func([sha256.Size]byte) string
	bufs       sync.Pool // of *uploadBuf
}

// uploadBuf is one send's scratch space, pooled: the payload, its compressed
// form and the gzip state.
type uploadBuf struct {
	payload    []byte
	compressed bytes.Buffer
	zw         *gzip.Writer
}

// New returns a Writer. It makes no request: a missing bucket or bad
// credentials show up as (fatal) send errors.
func New(cfg Config) (*Writer, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("%w: s3.Config.Client is nil", vinequeue.ErrInvalidConfig)
	}
	if cfg.Bucket == "" {
		return nil, fmt.Errorf("%w: s3.Config.Bucket is empty", vinequeue.ErrInvalidConfig)
	}
	return &Writer{
		client:     cfg.Client,
		bucket:     cfg.Bucket,
		prefix:     cfg.Prefix,
		gzip:       cfg.Gzip,
		objectName: cfg.ObjectName,
	}, nil
}

// SendLines is a vinequeue.SendFunc[[]byte]: each item is one line of the
// object (a newline is appended to it). An item that contains a newline
// would split into two lines, so it fails the batch with a fatal error.
func (w *Writer) SendLines(ctx context.Context, batch [][]byte) error {
	return upload(w, ctx, batch, func(dst []byte, v []byte) ([]byte, error) {
		return append(dst, v...), nil
	})
}

// SendFuncOf returns a vinequeue.SendFunc for items of a caller's type:
// appendLine appends the encoding of v to dst, without a newline (a JSON
// encoder's output, say, minus the newline json.Encoder adds). An error from
// it, or an encoding that contains a newline, fails the batch with a fatal
// error.
func SendFuncOf[T any](w *Writer, appendLine func(dst []byte, v T) ([]byte, error)) vinequeue.SendFunc[T] {
	return func(ctx context.Context, batch []T) error {
		return upload(w, ctx, batch, appendLine)
	}
}

// Name returns the object name that a batch whose uncompressed payload
// (items joined and terminated by newlines) is payload gets.
func (w *Writer) Name(payload []byte) string { return w.name(sha256.Sum256(payload)) }

func (w *Writer) name(sum [sha256.Size]byte) string {
	if w.objectName != nil {
		return w.objectName(sum)
	}
	ext := ".ndjson"
	if w.gzip {
		ext += ".gz"
	}
	return w.prefix + hex.EncodeToString(sum[:]) + ext
}

func upload[T any](w *Writer, ctx context.Context, batch []T, appendLine func([]byte, T) ([]byte, error)) (err error) {
	if len(batch) == 0 {
		return nil
	}
	buf, _ := w.bufs.Get().(*uploadBuf)
	if buf == nil {
		buf = new(uploadBuf)
	}
	defer w.putBuf(buf)

	payload := buf.payload[:0]
	for i, v := range batch {
		start := len(payload)
		if payload, err = appendLine(payload, v); err != nil {
			buf.payload = payload
			return vinequeue.Permanent(fmt.Errorf("%w: s3: encoding item %d of %d: %w", ErrFatal, i, len(batch), err))
		}
		if bytes.IndexByte(payload[start:], '\n') >= 0 {
			buf.payload = payload
			return vinequeue.Permanent(fmt.Errorf("%w: s3: item %d of %d contains a newline", ErrFatal, i, len(batch)))
		}
		payload = append(payload, '\n')
	}
	buf.payload = payload
	sum := sha256.Sum256(payload)
	name := w.name(sum)

	body, contentType := payload, "application/x-ndjson"
	if w.gzip {
		buf.compressed.Reset()
		if buf.zw == nil {
			buf.zw = gzip.NewWriter(&buf.compressed)
		} else {
			buf.zw.Reset(&buf.compressed)
		}
		// Writes to a bytes.Buffer cannot fail.
		_, _ = buf.zw.Write(payload)
		_ = buf.zw.Close()
		body, contentType = buf.compressed.Bytes(), "application/gzip"
	}

	_, err = w.client.PutObject(ctx, w.bucket, name, bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{
		ContentType:      contentType,
		SendContentMd5:   true, // the server verifies what it stores
		DisableMultipart: true, // one request: an object appears whole or not at all
		UserMetadata: map[string]string{
			"Items":          strconv.Itoa(len(batch)),
			"Payload-Sha256": hex.EncodeToString(sum[:]),
		},
	})
	if err != nil {
		if isFatal(err) {
			return vinequeue.Permanent(fmt.Errorf("%w: s3: put %s/%s (%d items): %w", ErrFatal, w.bucket, name, len(batch), err))
		}
		return fmt.Errorf("s3: put %s/%s (%d items): %w", w.bucket, name, len(batch), err)
	}
	return nil
}

// isFatal classifies an upload error; see the package doc.
func isFatal(err error) bool {
	resp := minio.ToErrorResponse(err)
	switch code := resp.StatusCode; {
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests:
		return false
	case code >= 400 && code < 500:
		return true
	}
	return false
}

// putBuf pools buf; buffers that grew past 16 MiB for one large batch are
// dropped rather than pinned.
func (w *Writer) putBuf(buf *uploadBuf) {
	const maxPooled = 16 << 20
	if cap(buf.payload) > maxPooled || buf.compressed.Cap() > maxPooled {
		return
	}
	w.bufs.Put(buf)
}
