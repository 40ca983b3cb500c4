"""Queries by domain: views and actors call named functions here, each scoped by the user
where it reads a user's data. (Moving every statement here is under way: issue 12.)"""
