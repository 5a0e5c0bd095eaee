package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"strings"

	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// Categories, builds and images: the firmware catalog.

func (s *server) listCategories(w http.ResponseWriter, r *http.Request, sc scope) error {
	org, ok := sc.filterOrg(r)
	f := store.CategoryFilter{Organization: org, IncludeShared: sc.scoped(), Name: r.URL.Query().Get("name")}
	return paginate(w, r, !ok, func(p store.Page) ([]store.Category, error) {
		f.Page = p
		return s.st.ListCategories(r.Context(), f)
	}, func(c store.Category) string { return c.ID }, categoryJSON)
}

// category returns category id when the caller may see it.
func (s *server) category(ctx context.Context, sc scope, id string) (store.Category, error) {
	c, err := s.st.Category(ctx, id)
	return visible(c, err, sc.sees(c.Organization), "category", id)
}

type categoryBody struct {
	Name         string `json:"name"`
	Description  string `json:"description"`
	Organization string `json:"organization"`
}

func (s *server) createCategory(w http.ResponseWriter, r *http.Request, sc scope) error {
	var body categoryBody
	if err := s.decodeJSON(w, r, &body, false); err != nil {
		return err
	}
	org, err := ownOrg(sc, body.Organization)
	if err != nil {
		return err
	}
	c, err := s.eng.CreateCategory(r.Context(), store.Category{Name: body.Name, Description: body.Description, Organization: org})
	if err != nil {
		return err
	}
	w.Header().Set("Location", apiPrefix+"category/"+c.ID+"/")
	writeJSON(w, http.StatusCreated, categoryJSON(c))
	return nil
}

// ownOrg is the organization of a record a caller creates: the caller's,
// when scoped (a body naming another is refused), else the body's.
func ownOrg(sc scope, asked string) (string, error) {
	if !sc.scoped() {
		return asked, nil
	}
	if asked != "" && asked != sc.org {
		return "", forbidden("organization %q is not yours (%s: %s)", asked, orgHeader, sc.org)
	}
	return sc.org, nil
}

func (s *server) listBuilds(w http.ResponseWriter, r *http.Request, sc scope) error {
	q := r.URL.Query()
	org, ok := sc.filterOrg(r)
	f := store.BuildFilter{Organization: org, IncludeShared: sc.scoped(), CategoryID: q.Get("category"), OSIdentifier: q.Get("os")}
	return paginate(w, r, !ok, func(p store.Page) ([]store.Build, error) {
		f.Page = p
		return s.st.ListBuilds(r.Context(), f)
	}, func(b store.Build) string { return b.ID }, buildJSON)
}

// build returns build id when the caller may see it.
func (s *server) build(ctx context.Context, sc scope, id string) (store.Build, error) {
	b, err := s.st.Build(ctx, id)
	return visible(b, err, sc.sees(b.Organization), "build", id)
}

type buildBody struct {
	Category  string `json:"category"`
	Version   string `json:"version"`
	OS        string `json:"os"`
	Changelog string `json:"changelog"`
}

func (s *server) createBuild(w http.ResponseWriter, r *http.Request, sc scope) error {
	var body buildBody
	if err := s.decodeJSON(w, r, &body, false); err != nil {
		return err
	}
	if body.Category == "" {
		return badRequest("category is required")
	}
	c, err := s.category(r.Context(), sc, body.Category)
	if err != nil {
		return err
	}
	if !sc.writable(c.Organization) {
		return forbidden("category %s is shared: only an operator without %s adds builds to it", c.ID, orgHeader)
	}
	b, err := s.eng.CreateBuild(r.Context(), store.Build{CategoryID: c.ID, Version: body.Version,
		OSIdentifier: body.OS, Changelog: body.Changelog})
	if err != nil {
		return err
	}
	w.Header().Set("Location", apiPrefix+"build/"+b.ID+"/")
	writeJSON(w, http.StatusCreated, buildJSON(b))
	return nil
}

func (s *server) listImages(w http.ResponseWriter, r *http.Request, sc scope) error {
	b, err := s.build(r.Context(), sc, r.PathValue("id"))
	if err != nil {
		return err
	}
	f := store.ImageFilter{BuildID: b.ID, Type: r.URL.Query().Get("type")}
	return paginate(w, r, false, func(p store.Page) ([]store.Image, error) {
		f.Page = p
		return s.st.ListImages(r.Context(), f)
	}, func(im store.Image) string { return im.ID }, imageJSON)
}

// image returns image id of build buildID when the caller may see it.
func (s *server) image(ctx context.Context, sc scope, buildID, id string) (store.Image, error) {
	im, err := s.st.Image(ctx, id)
	return visible(im, err, im.BuildID == buildID && sc.sees(im.Organization), "image", id)
}

func (s *server) getImage(w http.ResponseWriter, r *http.Request, sc scope) error {
	im, err := s.image(r.Context(), sc, r.PathValue("id"), r.PathValue("image"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, imageJSON(im))
	return nil
}

// uploadImage stores an image sent as multipart/form-data: optional "type",
// "name" and "sha256" fields, then the "file" part, streamed to the
// engine's Files without being held in memory or on disk here. The engine
// stores nothing when anything is wrong (too large, corrupt metadata, a
// checksum that does not match, a duplicate type).
func (s *server) uploadImage(w http.ResponseWriter, r *http.Request, sc scope) error {
	b, err := s.build(r.Context(), sc, r.PathValue("id"))
	if err != nil {
		return err
	}
	if !sc.writable(b.Organization) {
		return forbidden("build %s is shared: only an operator without %s adds images to it", b.ID, orgHeader)
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return &apiError{code: http.StatusUnsupportedMediaType,
			detail: "an image is uploaded as multipart/form-data with a \"file\" part"}
	}
	limit := s.eng.Config().MaxImageSize
	if limit != upgrader.NoImageSizeLimit {
		r.Body = http.MaxBytesReader(w, r.Body, limit+multipartOverhead)
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	im := store.Image{BuildID: b.ID}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return badRequest("the form has no \"file\" part")
		}
		if err != nil {
			return multipartError(err)
		}
		name := part.FormName()
		if name == "file" {
			if im.Name == "" {
				im.Name = path.Base(strings.ReplaceAll(part.FileName(), "\\", "/"))
				if im.Name == "." || im.Name == "/" {
					im.Name = ""
				}
			}
			body := &bodyReader{r: part}
			created, err := s.eng.UploadImage(r.Context(), im, body)
			if err != nil && body.err != nil {
				err = multipartError(body.err)
			}
			if err != nil {
				return err
			}
			w.Header().Set("Location", fmt.Sprintf("%sbuild/%s/image/%s/", apiPrefix, b.ID, created.ID))
			writeJSON(w, http.StatusCreated, imageJSON(created))
			return nil
		}
		v, err := io.ReadAll(io.LimitReader(part, maxMultipartFieldLength+1))
		if err != nil {
			return multipartError(err)
		}
		if len(v) > maxMultipartFieldLength {
			return badRequest("the form field %q is longer than %d bytes", name, maxMultipartFieldLength)
		}
		switch name {
		case "type":
			im.Type = strings.TrimSpace(string(v))
		case "name":
			im.Name = strings.TrimSpace(string(v))
		case "sha256":
			im.SHA256 = strings.TrimSpace(string(v))
		default:
			return badRequest("unknown form field %q (type, name, sha256 and file are; file comes last)", name)
		}
	}
}

// multipartError is a form the client broke: a 400, or a 413 when the body
// went over the limit.
func multipartError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	return badRequest("the multipart form is malformed or cut short: %v", err)
}

// bodyReader remembers the error reading the request body gave, to tell a
// client's broken upload from a failure of the server's storage.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		b.err = err
	}
	return n, err
}

// downloadImage streams an image's bytes from the engine's Files. Readers
// with random access (memory, directory and PostgreSQL files all have it)
// are served with http.ServeContent, so Range and If-None-Match work.
func (s *server) downloadImage(w http.ResponseWriter, r *http.Request, sc scope) error {
	im, err := s.image(r.Context(), sc, r.PathValue("id"), r.PathValue("image"))
	if err != nil {
		return err
	}
	rc, err := s.files.Open(r.Context(), im.ID)
	if errors.Is(err, upgrader.ErrFileNotFound) {
		return &apiError{code: http.StatusNotFound, detail: fmt.Sprintf("the bytes of image %s are missing", im.ID)}
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(im.Name)}))
	h.Set("ETag", `"`+im.SHA256+`"`)
	if ra, ok := rc.(io.ReaderAt); ok {
		http.ServeContent(w, r, "", im.CreatedAt, io.NewSectionReader(ra, 0, im.Size))
		return nil
	}
	h.Set("Content-Length", fmt.Sprint(im.Size))
	if _, err := io.Copy(w, rc); err != nil {
		s.log.Debug("image download cut short", "image", im.ID, "error", err)
	}
	return nil
}
