"""Services: the steps a change takes across the database and the actors, shared by the API's
views and the actors (views validate and answer; services change)."""
