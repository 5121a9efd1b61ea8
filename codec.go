package vinequeue

import (
	"errors"
	"fmt"
)

// bytesCodec and stringCodec are the built-in Codecs for []byte and string
// items: the encoding is the bytes themselves (the WAL frames each item with
// its length).
type bytesCodec struct{}

func (bytesCodec) Append(dst []byte, v []byte) ([]byte, error) { return append(dst, v...), nil }
func (bytesCodec) Decode(src []byte) ([]byte, error)           { return append([]byte(nil), src...), nil }

type stringCodec struct{}

func (stringCodec) Append(dst []byte, v string) ([]byte, error) { return append(dst, v...), nil }
func (stringCodec) Decode(src []byte) (string, error)           { return string(src), nil }

// errNoCodec is wrapped by New's error for a WAL without a Codec for T.
var errNoCodec = errors.New("needed with a WAL unless T is []byte or string")

// builtinCodec returns the Codec for T when T is []byte or string.
func builtinCodec[T any]() (Codec[T], error) {
	var zero T
	switch any(zero).(type) {
	case []byte:
		return any(Codec[[]byte](bytesCodec{})).(Codec[T]), nil
	case string:
		return any(Codec[string](stringCodec{})).(Codec[T]), nil
	}
	return nil, fmt.Errorf("%w: Codec: %w", ErrInvalidConfig, errNoCodec)
}
