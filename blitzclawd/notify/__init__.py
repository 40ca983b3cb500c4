"""Money and fleet news out: the Resend client and every email's wording."""
