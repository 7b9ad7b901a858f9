"""The HTTP side: the service process, its REST API, and the job views it serves."""
