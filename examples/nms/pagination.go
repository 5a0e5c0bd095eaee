package main

import (
	"net/http"
	"net/url"
	"strconv"

	"github.com/fwupgrader/fwupgrader/store"
)

// pageRequest is a list's pagination: page numbers (Django REST framework's
// PageNumberPagination: ?page=&page_size=) or a keyset cursor (?cursor=ID,
// the last ID of the previous page, "" for the first).
type pageRequest struct {
	cursor     bool
	after      string
	page, size int
}

func parsePage(r *http.Request) (pageRequest, error) {
	q := r.URL.Query()
	pr := pageRequest{page: 1, size: defaultPageSize}
	if v := q.Get("page_size"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageSize {
			return pr, badRequest("page_size must be a number from 1 to %d", maxPageSize)
		}
		pr.size = n
	}
	if q.Has("cursor") {
		if q.Has("page") {
			return pr, badRequest("use either page or cursor, not both")
		}
		pr.cursor, pr.after = true, q.Get("cursor")
		if len(pr.after) > store.MaxIDLen {
			return pr, badRequest("cursor is not an ID")
		}
		return pr, nil
	}
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return pr, badRequest("page must be a positive number")
		}
		pr.page = n
	}
	return pr, nil
}

// pageBody is a page of a list, as Django REST framework writes it. Count
// is absent when walking with a cursor.
type pageBody struct {
	Count    *int    `json:"count,omitempty"`
	Next     *string `json:"next"`
	Previous *string `json:"previous"`
	Results  []any   `json:"results"`
}

// paginate answers one page of a list. list returns the records of a store
// page in ID order (store.Page); page-number pagination reads the whole list
// to count it, a cursor reads one page (and one record more, to know whether
// there is a next page). empty answers an empty first page without asking
// the store (a filter that excludes everything). It returns the error to
// answer instead of the page.
func paginate[T any](w http.ResponseWriter, r *http.Request, empty bool,
	list func(store.Page) ([]T, error), id func(T) string, render func(T) any) error {
	pr, err := parsePage(r)
	if err != nil {
		return err
	}
	body := pageBody{Results: []any{}}
	var recs []T
	switch {
	case empty:
	case pr.cursor:
		recs, err = list(store.Page{After: pr.after, Limit: pr.size + 1})
		if err == nil && len(recs) > pr.size {
			recs = recs[:pr.size]
			body.Next = pageURL(r, "cursor", id(recs[len(recs)-1]))
		}
	default:
		var all []T
		all, err = list(store.Page{})
		n := len(all)
		body.Count = &n
		start := (pr.page - 1) * pr.size
		if err == nil && start < n {
			recs = all[start:min(start+pr.size, n)]
		}
		if err == nil && start+pr.size < n {
			body.Next = pageURL(r, "page", strconv.Itoa(pr.page+1))
		}
		if err == nil && pr.page > 1 {
			prev := min(pr.page-1, max(1, (n+pr.size-1)/pr.size))
			body.Previous = pageURL(r, "page", strconv.Itoa(prev))
		}
	}
	if err != nil {
		return err
	}
	if empty {
		n := 0
		if !pr.cursor {
			body.Count = &n
		}
	}
	for _, rec := range recs {
		body.Results = append(body.Results, render(rec))
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

// pageURL is the absolute URL of r with query parameter key set to value.
func pageURL(r *http.Request, key, value string) *string {
	u := url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path}
	if r.TLS != nil {
		u.Scheme = "https"
	}
	q := r.URL.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	s := u.String()
	return &s
}
