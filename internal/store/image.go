package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Image is an image recorded in the image store: its files live in Dir.
type Image struct {
	ID, Name, Dir, Source string
	SizeBytes             int64
	Manifest              []byte // JSON; stored as given ("{}" when empty)
	CreatedAt             time.Time
}

const imageColumns = "id, name, dir, source, size_bytes, manifest, created_at"

func validateImage(img Image) error {
	switch {
	case img.ID == "":
		return fmt.Errorf("empty id: %w", ErrInvalid)
	case img.Name == "":
		return fmt.Errorf("empty name: %w", ErrInvalid)
	case img.Dir == "":
		return fmt.Errorf("empty dir: %w", ErrInvalid)
	case len(img.Manifest) > 0 && !json.Valid(img.Manifest):
		return fmt.Errorf("manifest is not valid JSON: %w", ErrInvalid)
	}
	return nil
}

// CreateImage records img. CreatedAt defaults to the store clock. A
// duplicate id or name is ErrConflict.
func (s *Store) CreateImage(ctx context.Context, img Image) error {
	if err := validateImage(img); err != nil {
		return fmt.Errorf("create image %q: %w", img.Name, err)
	}
	if img.CreatedAt.IsZero() {
		img.CreatedAt = s.now()
	}
	err := s.write(ctx, func(tx *sql.Tx) error { return insertImage(ctx, tx, img) })
	if err != nil {
		return fmt.Errorf("create image %q: %w", img.Name, err)
	}
	return nil
}

func insertImage(ctx context.Context, tx *sql.Tx, img Image) error {
	manifest := string(img.Manifest)
	if manifest == "" {
		manifest = "{}"
	}
	_, err := tx.ExecContext(ctx, "INSERT INTO images ("+imageColumns+") VALUES (?, ?, ?, ?, ?, ?, ?)",
		img.ID, img.Name, img.Dir, img.Source, img.SizeBytes, manifest, formatTime(img.CreatedAt))
	if isUnique(err) {
		return fmt.Errorf("image name or id already exists: %w", ErrConflict)
	}
	return err
}

// GetImage returns the image named by ref: its id, a unique id prefix of at
// least 4 characters, or its name. A miss is a *NotFoundError.
func (s *Store) GetImage(ctx context.Context, ref string) (Image, error) {
	var img Image
	err := s.read(ctx, func(tx *sql.Tx) error {
		id, err := resolveRef(ctx, tx, "image", "images", ref)
		if err != nil {
			return err
		}
		img, err = getImage(ctx, tx, id)
		return err
	})
	if err != nil {
		return Image{}, wrapLookup("get image", ref, err)
	}
	return img, nil
}

func getImage(ctx context.Context, tx *sql.Tx, id string) (Image, error) {
	img, err := scanImage(tx.QueryRowContext(ctx, "SELECT "+imageColumns+" FROM images WHERE id = ?", id))
	if err == sql.ErrNoRows {
		return Image{}, &NotFoundError{Kind: "image", Ref: id}
	}
	return img, err
}

func scanImage(row interface{ Scan(...any) error }) (Image, error) {
	var img Image
	var manifest, created string
	if err := row.Scan(&img.ID, &img.Name, &img.Dir, &img.Source, &img.SizeBytes, &manifest, &created); err != nil {
		return Image{}, err
	}
	img.Manifest = []byte(manifest)
	var err error
	img.CreatedAt, err = parseTime(created)
	return img, err
}

// ListImages returns every image, by name.
func (s *Store) ListImages(ctx context.Context) ([]Image, error) {
	var out []Image
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, "SELECT "+imageColumns+" FROM images ORDER BY name")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			img, err := scanImage(rows)
			if err != nil {
				return err
			}
			out = append(out, img)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return out, nil
}

// CountImages returns the number of images.
func (s *Store) CountImages(ctx context.Context) (int, error) {
	var n int
	err := s.read(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, "SELECT count(*) FROM images").Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("count images: %w", err)
	}
	return n, nil
}

// ImageInUse returns the names of the VMs built from image imageID, sorted.
func (s *Store) ImageInUse(ctx context.Context, imageID string) ([]string, error) {
	var names []string
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		names, err = imageUsers(ctx, tx, imageID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("image %s in use: %w", imageID, err)
	}
	return names, nil
}

func imageUsers(ctx context.Context, tx *sql.Tx, imageID string) ([]string, error) {
	return columnStrings(ctx, tx, "SELECT name FROM vms WHERE image_id = ? ORDER BY name", imageID)
}

// DeleteImage removes the record of image id (its files are the caller's).
// A missing image is ErrNotFound; an image some VM still uses is
// ErrConflict naming those VMs.
func (s *Store) DeleteImage(ctx context.Context, id string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		users, err := imageUsers(ctx, tx, id)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return fmt.Errorf("used by vm %s: %w", strings.Join(users, ", "), ErrConflict)
		}
		res, err := tx.ExecContext(ctx, "DELETE FROM images WHERE id = ?", id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return &NotFoundError{Kind: "image", Ref: id}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete image %s: %w", id, err)
	}
	return nil
}
