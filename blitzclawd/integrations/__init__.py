"""Outside accounts a user connects for their assistants (Google so far): the OAuth clients."""
