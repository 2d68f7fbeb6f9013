"""Operations on what is stored: audit, export to recipients, and which runs may be released."""
