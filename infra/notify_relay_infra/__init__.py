"""The AWS deployment of notify-relay, one small construct per resource group."""
