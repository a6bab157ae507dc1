package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/lifeboat-dev/lifeboat/proxy"
	"github.com/lifeboat-dev/lifeboat/upstream"
)

// OCI distribution error codes used by lifeboat.
const (
	codeBlobUnknown     = "BLOB_UNKNOWN"
	codeManifestUnknown = "MANIFEST_UNKNOWN"
	codeNameUnknown     = "NAME_UNKNOWN"
	codeNameInvalid     = "NAME_INVALID"
	codeDigestInvalid   = "DIGEST_INVALID"
	codeSizeInvalid     = "SIZE_INVALID"
	codeUnauthorized    = "UNAUTHORIZED"
	codeDenied          = "DENIED"
	codeUnsupported     = "UNSUPPORTED"
	codePaginationN     = "PAGINATION_NUMBER_INVALID"
	codeUnavailable     = "UNAVAILABLE"
	codeUnknown         = "UNKNOWN"
)

type apiError struct {
	status  int
	code    string
	message string
}

// errUnsupported answers push, delete, catalog and other endpoints a
// read-only pull-through cache does not serve.
var errUnsupported = errors.New("lifeboat is a read-only pull-through cache: this operation is not supported")

// toAPIError is the one mapping from an error to an HTTP status and OCI code.
// Disk and other internal errors are an honest 500, never a 404.
func toAPIError(k kind, err error) apiError {
	var ue *upstream.Error
	switch {
	case errors.Is(err, errUnsupported):
		return apiError{http.StatusMethodNotAllowed, codeUnsupported, err.Error()}
	case errors.Is(err, errNotFound):
		return apiError{http.StatusNotFound, codeNameUnknown, "no such endpoint"}
	case errors.Is(err, errNameInvalid):
		return apiError{http.StatusBadRequest, codeNameInvalid, err.Error()}
	case errors.Is(err, errDigestInvalid):
		return apiError{http.StatusBadRequest, codeDigestInvalid, err.Error()}
	case errors.Is(err, errTagInvalid):
		return apiError{http.StatusBadRequest, codeManifestUnknown, err.Error() + ": neither a tag nor a digest"}
	case errors.Is(err, errPaginationN):
		return apiError{http.StatusBadRequest, codePaginationN, err.Error()}
	case errors.Is(err, proxy.ErrUnknownRegistry):
		return apiError{http.StatusForbidden, codeDenied, err.Error()}
	case errors.Is(err, proxy.ErrDigestMismatch):
		return apiError{http.StatusBadGateway, codeDigestInvalid, err.Error()}
	case errors.Is(err, proxy.ErrPrivateVerify):
		// No WWW-Authenticate: containerd then asks its next host, the
		// registry itself, with the pod's credentials.
		return apiError{http.StatusUnauthorized, codeUnauthorized, err.Error()}
	case errors.Is(err, proxy.ErrPrivateOutage):
		return apiError{http.StatusForbidden, codeDenied, err.Error()}
	case errors.Is(err, proxy.ErrDiskFull):
		return apiError{http.StatusServiceUnavailable, codeUnavailable, err.Error()}
	case errors.Is(err, upstream.ErrTooLarge):
		return apiError{http.StatusBadGateway, codeSizeInvalid, err.Error()}
	case errors.As(err, &ue):
		switch {
		case ue.Reason == upstream.ReasonNotFound:
			return apiError{http.StatusNotFound, unknownCode(k), fmt.Sprintf("upstream %s: not found", ue.Registry)}
		case ue.Status == http.StatusUnauthorized:
			return apiError{http.StatusUnauthorized, codeUnauthorized, fmt.Sprintf("upstream %s refused lifeboat's credentials; pull from it directly", ue.Registry)}
		case ue.Reason == upstream.ReasonDenied:
			return apiError{http.StatusForbidden, codeDenied, fmt.Sprintf("upstream %s denied access; pull from it directly", ue.Registry)}
		case ue.Reason == upstream.ReasonBadResponse:
			return apiError{http.StatusBadGateway, codeUnknown, ue.Error()}
		case ue.Unavailable():
			// Never 429: containerd retries a 429 on the same host, where a
			// 503 sends it to its next host at once.
			return apiError{http.StatusServiceUnavailable, codeUnavailable, fmt.Sprintf("upstream %s unavailable (%s) and the content is not cached", ue.Registry, ue.Reason)}
		}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return apiError{http.StatusServiceUnavailable, codeUnavailable, err.Error()}
	}
	return apiError{http.StatusInternalServerError, codeUnknown, err.Error()}
}

func unknownCode(k kind) string {
	switch k {
	case kindBlob:
		return codeBlobUnknown
	case kindManifest:
		return codeManifestUnknown
	}
	return codeNameUnknown
}

// writeError writes err as OCI error JSON, with its status. Once the
// response's headers were sent it writes nothing (an error body would be
// read as the rest of a blob or manifest) and reports false: the caller
// must cut the connection.
func writeError(w *recorder, k kind, err error) (apiError, bool) {
	e := toAPIError(k, err)
	if w.wroteHeader {
		return e, false
	}
	h := w.Header()
	for _, name := range []string{"Content-Length", "Content-Range", "Docker-Content-Digest", "Etag", "Last-Modified"} {
		h.Del(name)
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errors": []map[string]string{{"code": e.code, "message": e.message}},
	})
	return e, true
}
