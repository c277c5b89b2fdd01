-- 0012: when retention removed a drop file from .done/ (NULL: the file is still there). A
-- version of that file still current in `records` when it went is logged with its body once a
-- later version displaces it (the file can no longer give it); before, its inbox row named the
-- removed file and had no body, and the version was lost.
ALTER TABLE files ADD COLUMN removed_at INTEGER;
