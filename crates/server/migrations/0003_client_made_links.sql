-- Invitations are made by a host's client (issue 14): the server stores only the SHA-256 of
-- the token its client derives from the invitation's secret, which stays in the link's
-- fragment. Invitations from before (server-signed tokens, no digest) no longer admit anyone.
ALTER TABLE invitations ADD COLUMN token_sha256 BLOB;
