-- 0014_user_email_state: what Clerk says of a user's primary email, and when we last asked.
--
-- email_verified is NULL while unknown (Clerk not asked yet, or unreachable), else whether the
-- primary address's verification.status is "verified". clerk_checked_at is the last Backend API
-- lookup (successful or not): lookups of one user are spaced out, across daemons, by claiming it.

ALTER TABLE users
    ADD COLUMN email_verified boolean,
    ADD COLUMN clerk_checked_at timestamptz;
